"""Load tests and benchmarks: `python -m loadtests.bench`; locust with loadtests/locustfile.py."""
