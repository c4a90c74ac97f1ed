"""`python -m fake_upstream`: run the mock upstream from the command line."""

from .launch import main

main()
