"""Stage 2: the diffusion teacher (conditioned on scene and head) that refines Grad-CAM maps.

    model.py         GazeDiffusionTeacher: VAT encoder -> context pyramid -> diffusers U-Net predicting x0
    diffusion.py     schedulers (diffusers DDPM / DDIM), noising, DDIM sampling, refine_heatmaps
    mean_teacher.py  EMA teacher, consistency loss, two-stream batches (docs/method.md#mean-teacher)
    config.py        the ``teacher:`` and ``refine:`` config sections
    benchmark.py     refined persons / second (make bench)

Stage runners: pipelines/train_teacher.py (make train-teacher), pipelines/refine.py (make refine).
"""
