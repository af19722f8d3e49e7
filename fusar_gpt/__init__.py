"""fusar-gpt: SAR vision-language modelling with AlphaEarth priors (TLM) on Qwen2.5-VL."""

__version__ = "0.1.0"

__all__ = ["__version__", "TLM", "FusarGPT", "Priors"]


def __getattr__(name):  # keep `import fusar_gpt` light: torch/transformers load on first use
    if name == "TLM":
        from .model.tlm import TLM
        return TLM
    if name in ("FusarGPT", "Priors"):
        from .model import fusar
        return getattr(fusar, name)
    raise AttributeError(name)
