"""The released WorldStereo 2.0 variants: configs, the ControlNet-conditioned Wan transformer, camera tokens, loading and
the keyframe-clip sampler."""
