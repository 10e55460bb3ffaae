"""Stage 1: Grad-CAM heatmaps of the answer of a VQA model (BLIP) about where a person looks."""
