"""Tools beside the method (gcdr never imports them): SynthGaze and its stand-in VQA, the ablation and demo, the
benchmarks, the gallery."""
