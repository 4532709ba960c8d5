"""simlib: visual similarity search without tags or labels.

Importing this package is cheap: TensorFlow, FAISS and Gradio load only when a
function that needs them runs.
"""

__version__ = "0.1.0"

from simlib.errors import SimlibError

__all__ = ["SimlibError", "__version__"]
