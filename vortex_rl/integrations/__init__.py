"""Adapters that plug vortex-rl into other frameworks. The top layer: it may import anything of ours and
nothing of ours imports it; each framework lives in its own subpackage, the only code that imports it."""
