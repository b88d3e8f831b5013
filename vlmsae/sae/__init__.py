"""Sparse autoencoders: one file per variant, a shared base, and save/load."""

from .base import SAE, LossOutput
from .batchtopk import BatchTopKSAE
from .io import SAE_CLASSES, load_sae
from .jumprelu import JumpReLUSAE
from .relu import ReLUSAE
from .topk import TopKSAE

__all__ = ["SAE", "LossOutput", "TopKSAE", "BatchTopKSAE", "JumpReLUSAE", "ReLUSAE", "load_sae", "SAE_CLASSES"]
