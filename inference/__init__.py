"""OpenAI-compatible inference server of the on-prem assistant appliance."""

__version__ = "0.1.0"
