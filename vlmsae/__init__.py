"""vlmsae: sparse autoencoders on vision-language embedding spaces."""

__version__ = "0.1.0"

from .sae import BatchTopKSAE, JumpReLUSAE, ReLUSAE, TopKSAE, load_sae  # noqa: E402

__all__ = ["TopKSAE", "BatchTopKSAE", "JumpReLUSAE", "ReLUSAE", "load_sae", "__version__"]
