.PHONY: help install test test-all lint format train-debug summary

help:  ## show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "%-12s %s\n", $$1, $$2}'

install:  ## install the package with test tools
	pip install -e ".[dev]"

test:  ## the default test run (slow tests excluded)
	pytest

test-all:  ## every test, slow ones included
	pytest -m ""

lint:  ## ruff checks
	ruff check detector tests bench *.py

format:  ## ruff format
	ruff format detector tests bench *.py

train-debug:  ## two training steps end to end
	python train.py trainer=debug dataset.num_train=16 dataset.num_val=8 dataset.root=data_cache/synthetic_debug

summary:  ## model summary (pass ARGS="backbone.alpha=0.5")
	python -m detector.summary $(ARGS)
