"""gkm: defocus deblurring with the Gaussian Kernel Mixture network family."""

__version__ = "0.1.0"
