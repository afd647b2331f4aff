"""sjc: Score Jacobian Chaining, lifting a pretrained 2D diffusion model into a 3D voxel radiance field."""
__version__ = "0.1.0"
