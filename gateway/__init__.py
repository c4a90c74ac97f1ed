"""poolgate: share a pool of OpenAI and Anthropic API keys behind their native APIs."""

__version__ = "0.1.0"
