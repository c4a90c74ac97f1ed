"""What is known about models: families, and later context windows, tokenizers and prices.

The bottom room: it imports nothing of poolgate.
"""
