"""infercast simulator core: pure Python, never imports torch or streamlit."""

__version__ = "0.1.0"
