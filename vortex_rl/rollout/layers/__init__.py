"""Model building blocks whose parameters carry their own ``weight_loader``."""
