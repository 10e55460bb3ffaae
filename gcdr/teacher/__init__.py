"""Stage 2: the diffusion teacher (conditioned on scene and head) that refines Grad-CAM maps."""
