"""Tools beside the method (gcdr never imports them): the gallery; later the demo, benchmarks, SynthGaze."""
