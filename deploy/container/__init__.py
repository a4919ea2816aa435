"""What runs inside the SageMaker PyTorch inference container (shipped as `code/` in model.tar.gz).

Only the standard library, torch, torchvision, pillow and the `dogbreed` modules the
package step copies next to it: the container has nothing else of this project.
"""
