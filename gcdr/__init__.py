"""gcdr: diffusion-refined VQA pseudo-labels for semi-supervised gaze following.

Three stages, three sub-packages:
  gcdr.vqa       stage 1, Grad-CAM heatmaps from a VQA model
  gcdr.teacher   stage 2, the diffusion teacher that refines them
  gcdr.students  stage 3, VAT and Gaze-LLE trained on labeled + pseudo-labeled data
shared by all: gcdr.data (datasets, transforms, splits), gcdr.metrics, gcdr.pseudolabels (the folder format).
"""

__version__ = "0.1.0"
