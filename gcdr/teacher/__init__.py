"""Stage 2: the diffusion teacher (conditioned on scene and head) that refines Grad-CAM maps.

    model.py         GazeDiffusionTeacher: VAT encoder -> context pyramid -> diffusers U-Net predicting x0
    diffusion.py     schedulers (diffusers DDPM / DDIM), noising, DDIM sampling, refine_heatmaps
    mean_teacher.py  EMA teacher, consistency loss, two-stream batches (docs/method.md#mean-teacher)
    config.py        the ``teacher:`` and ``refine:`` config sections
    training.py      the teacher's training loop (make train-teacher), top to bottom; its step is the bench's
    refine.py        the refinement stage (make refine): GCDR, raw and argmax pseudo-label folders

Thin stage runners: pipelines/train_teacher.py, pipelines/refine.py. Benchmarks: gcdr_tools/bench/teacher.py.
"""
