"""Network building blocks."""

from aca.models.odeblock import ODEBlock

__all__ = ["ODEBlock"]
