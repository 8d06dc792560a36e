"""delsim: a simulation framework on Ray for DEL split inference."""

__version__ = "0.1.0"
