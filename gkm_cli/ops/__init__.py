"""Pure tensor operators: Gaussian banks and image pyramids."""
