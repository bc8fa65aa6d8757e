"""DingTalk connector of the on-prem assistant appliance (talks to the model over the OpenAI API only)."""

__version__ = "0.1.0"
