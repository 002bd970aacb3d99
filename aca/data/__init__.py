"""Datasets: CIFAR pickle reader, Hopper generator, irregular sampling."""
