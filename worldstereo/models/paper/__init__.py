"""The paper's architecture: Wan2.1-I2V with a camera ControlNet (GGM) and a spatial-stereo memory (SSM) branch."""
