"""Stage 1: Grad-CAM heatmaps of the answer of a VQA model (BLIP) about where a person looks.

    blip.py        load BLIP VQA (hub id or local dir), build a small one from scratch, the forward pieces
    prompt.py      the person's box drawn in green + the question (GCDR 9.2)
    keynoun.py     the answer's key noun and its sub-word token (GCDR 9.3)
    gradcam.py     the two CAM families: text-encoder cross-attention, pytorch-grad-cam on the ViT (GCDR 9.4)
    annotate.py    the stage (make gradcam): claims its folder for the request, persons -> pseudo-label folder
                   (batched, resumable, previews)
    preview.py     inspection overlays

The SynthGaze stand-in VQA and its training live beside the method: gcdr_tools/synth_vqa.py,
gcdr_tools/vqa_training.py; the throughput benchmark in gcdr_tools/bench/vqa.py.
"""
