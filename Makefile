# Urban Form Mapper: set-up, demo, tests, benchmarks, packaging.
# `make demo` and `make test` set everything up first on a fresh Debian/Ubuntu machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV      := .venv
PY        := $(VENV)/bin/python
SYS_PY    := /usr/bin/python3
APT_PKGS  := qgis python3-qgis qgis-providers python3-venv python3-pip xvfb xauth chromium curl
VERSION   := $(shell sed -n 's/^version=//p' metadata.txt)
PROFILE   ?= default
QGIS_PLUGINS := $(HOME)/.local/share/QGIS/QGIS3/profiles/$(PROFILE)/python/plugins
DIST      ?= dist
REPO_URL  ?=
DEMO_RASTER  := resources/sample/kampala_ug_oam_rgb_z19_epsg3857.tif
# make serve: where the service listens and keeps its jobs, models and data (`make serve PORT=9000 ...`).
# HOST is only taken from make's command line, never from the environment (tcsh exports HOST as the
# machine's name, which would listen beyond this machine).
HOST      := 127.0.0.1
PORT      ?= 8000
DATA_DIR  ?= service_data
JOBS      ?=
TOKEN_FILE ?=
SERVE_OPTS = $(if $(JOBS),--jobs "$(JOBS)") $(if $(TOKEN_FILE),--token-file "$(TOKEN_FILE)")
# headless Qt for every QGIS process started from here
export QT_QPA_PLATFORM ?= offscreen

.PHONY: help setup lock system-packages demo serve test test-engine test-plugin test-lane-a test-lane-b bench bench-gpu eval package deploy undeploy clean distclean

help:
	@echo "make demo      set up if needed, then cluster the bundled Kampala sample into demo_out/"
	@echo "make serve     set up if needed, then serve the engine (OGC API - Processes) on http://$(HOST):$(PORT)"
	@echo "               (HOST=0.0.0.0 TOKEN_FILE=tokens for a network, PORT, DATA_DIR=$(DATA_DIR), JOBS=N)"
	@echo "make test      set up if needed, then run every test (engine and real-QGIS plugin tests)"
	@echo "make setup     install QGIS (Debian, as root) and the engine venv (.venv) from requirements.lock"
	@echo "make lock      pin requirements.txt with hashes into requirements.lock"
	@echo "make bench     throughput, malloc tuning and memory benchmarks (minutes)"
	@echo "make bench-gpu the GPU benchmark (features, segmentation, DeepCluster, 11 Gpx projection; CPU: small sizes)"
	@echo "make eval      clustering and building segmentation quality on every labelled image and the synthetic city (~1.5 h)"
	@echo "make package   plugin zip and plugins.xml in $(DIST)/ (Install from ZIP, or a plugin repository at REPO_URL)"
	@echo "make deploy    link this tree into the QGIS profile '$(PROFILE)' for development"
	@echo "make clean     remove build and demo outputs (distclean also removes .venv); never the service's"
	@echo "               $(DATA_DIR)/ (its jobs, models and data: remove it by hand)"

# ---------------------------------------------------------------- set-up
setup: $(VENV)/.setup-done

system-packages:
	@missing=$$(for p in $(APT_PKGS); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo ">> installing $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	elif command -v apt-get >/dev/null; then \
		echo "Missing system packages: $$missing. Run:"; \
		echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends $(APT_PKGS)"; \
		echo "then run make again."; exit 1; \
	else \
		echo "This is not a Debian/Ubuntu machine. Install QGIS >= 3.22 with its Python bindings"; \
		echo "(https://qgis.org/download), then create the engine environment by hand:"; \
		echo "  python3 -m venv --system-site-packages $(VENV)"; \
		echo "  $(VENV)/bin/pip install -r requirements.txt"; \
		echo "  touch $(VENV)/.setup-done"; exit 1; \
	fi

# the engine's packages come from the lock (exact versions and hashes), the test tools after them
$(VENV)/.setup-done: requirements.lock tests/requirements.txt | system-packages
	@test -x $(PY) || $(SYS_PY) -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --require-hashes -r requirements.lock
	$(PY) -m pip install -q --disable-pip-version-check -r tests/requirements.txt
	@$(PY) -c "import qgis.core, torch, rasterio, geopandas, sklearn" \
		|| { echo "The engine venv cannot import its packages; see the messages above."; exit 1; }
	@touch $@

# pin requirements.txt with hashes for every platform (the plugin installs the same lock); CI fails
# when requirements.lock was not regenerated after requirements.txt changed. The current lock is the
# starting point (uv keeps its pins where they still satisfy requirements.txt), so adding a package
# does not upgrade the others
lock:
	@test -x $(VENV)/bin/uv || { test -x $(PY) || $(SYS_PY) -m venv --system-site-packages $(VENV); \
		$(PY) -m pip install -q --disable-pip-version-check uv; }
	@cp requirements.lock requirements.lock.part 2>/dev/null || true   # keep the pins that still fit
	$(VENV)/bin/uv pip compile requirements.txt --universal --python-version 3.10 --generate-hashes \
		--no-header --quiet -o requirements.lock.part
	@{ echo "# requirements.lock: generated by 'make lock' from requirements.txt; do not edit."; \
	   echo "# requirements.txt sha256: $$(sha256sum requirements.txt | cut -d' ' -f1)"; \
	   cat requirements.lock.part; } > requirements.lock && rm requirements.lock.part
	@echo "requirements.lock updated; commit it with requirements.txt"

# ---------------------------------------------------------------- run
demo: setup
	@mkdir -p demo_out
	$(PY) -m engine cluster $(DEMO_RASTER) --out demo_out/kampala.gpkg --k 6 --tile-size 64px \
		--backbone efficientnet_lite0 --weights imagenet --seed 0 \
		--buildings resources/sample/kampala_ug_osm_buildings.geojson --overwrite
	@echo ""
	@echo "Demo outputs in $(CURDIR)/demo_out/:"
	@ls -1 demo_out | sed 's/^/  /'
	@echo "Open demo_out/kampala.gpkg (layer 'tiles') and demo_out/kampala_clusters.tif in QGIS;"
	@echo "demo_out/kampala_quicklook.png shows the clusters over the image; kampala_profile.png and"
	@echo "kampala_stats.csv describe the clusters by their buildings (layer 'clusters' in the GeoPackage)."

# the service: jobs, their files, the job table, models (DATA_DIR/models) and data given by reference
# (DATA_DIR/data) live in DATA_DIR, which no clean target removes
serve: setup
	$(PY) -m engine serve --host "$(HOST)" --port "$(PORT)" --data-dir "$(DATA_DIR)" $(SERVE_OPTS)

# the two suites run side by side, one torch thread each (URBANFORM_THREADS, OMP_NUM_THREADS): on two cores
# most of either suite waits on Python, GDAL or QGIS, not on torch. The Dask tests (DASK_TESTS) run in the lane
# that finishes its suite first (it claims them by creating DASK_CLAIM), so both lanes end at about the same time
# whichever suite is the longer on this machine. SERIAL=1 runs the suites one after the other, all threads.
DASK_TESTS = tests/engine/distributed
DASK_CLAIM = .test-results/.dask-claimed
ENGINE_PYTEST = $(PY) -m pytest -p no:qgis -q -ra --durations=20

test: setup
ifeq ($(SERIAL),1)
	$(MAKE) --no-print-directory test-engine test-plugin
else
	mkdir -p .test-results && rm -rf $(DASK_CLAIM) .test-results/engine-dask.xml
	URBANFORM_THREADS=1 OMP_NUM_THREADS=1 $(MAKE) --no-print-directory -j2 --output-sync=target test-lane-a test-lane-b
endif

test-engine: setup
	rm -f .test-results/engine-dask.xml
	$(ENGINE_PYTEST) tests/engine --junitxml=.test-results/engine.xml

PLUGIN_PYTEST = $(PY) -m pytest tests/plugin -q -ra --durations=20 --junitxml=.test-results/plugin.xml

test-plugin: setup
	$(PLUGIN_PYTEST)

# the two lanes of `make test`: the engine suite but its Dask tests, and the plugin suite; then the lane that
# ends first runs the Dask tests (which run, and report, even when a test of that lane's suite failed)
RUN_DASK_IF_FIRST = if mkdir $(DASK_CLAIM) 2>/dev/null; then \
	$(ENGINE_PYTEST) $(DASK_TESTS) --junitxml=.test-results/engine-dask.xml || rc=$$?; fi

test-lane-a: setup
	rc=0; $(ENGINE_PYTEST) tests/engine --ignore=$(DASK_TESTS) --junitxml=.test-results/engine.xml || rc=$$?; \
	$(RUN_DASK_IF_FIRST); exit $$rc

test-lane-b: setup
	rc=0; $(PLUGIN_PYTEST) || rc=$$?; \
	$(RUN_DASK_IF_FIRST); exit $$rc

eval: setup
	$(PY) tests/bench/eval.py --out bench_out
	$(PY) tests/bench/eval_form.py --seeds 3 --out bench_out
	$(PY) tests/bench/eval_deepcluster.py --out bench_out
	$(PY) tests/bench/eval_segment.py --out bench_out

# every benchmark runs even when an earlier one misses its target (exit 1); the target fails at the end
bench: setup
	@rc=0; \
	$(PY) tests/bench/bench.py --out bench_out || rc=1; \
	$(PY) tests/bench/bench_deepcluster.py --out bench_out || rc=1; \
	$(PY) tests/bench/bench_sweep.py --repeats 3 --out bench_out || rc=1; \
	$(PY) tests/bench/bench_stats.py --out bench_out || rc=1; \
	$(PY) tests/bench/bench_segment.py --out bench_out || rc=1; \
	$(PY) tests/bench/bench_service.py --out bench_out || rc=1; \
	$(PY) tests/bench/bench_dask.py --out bench_out || rc=1; \
	if [ $$rc -ne 0 ]; then echo "make bench: a benchmark missed its target (see above)"; fi; exit $$rc

# one prepared script for a machine with an NVIDIA GPU (under 8 minutes there; small sizes on a CPU)
bench-gpu: setup
	$(PY) tests/bench/bench_gpu.py --out bench_out

# ---------------------------------------------------------------- plugin
# the zip and plugins.xml (a custom plugin repository) in $(DIST); REPO_URL is where $(DIST) will be
# served (default: its file:// URL, so the folder itself works as a repository)
package:
	@$(SYS_PY) resources/packaging/package.py --dist "$(DIST)" --repo-url "$(REPO_URL)"

deploy:
	@mkdir -p "$(QGIS_PLUGINS)"
	@if [ -e "$(QGIS_PLUGINS)/urbanform" ] && [ ! -L "$(QGIS_PLUGINS)/urbanform" ]; then \
		echo "$(QGIS_PLUGINS)/urbanform exists and is not a link; remove it first."; exit 1; fi
	ln -sfn "$(CURDIR)" "$(QGIS_PLUGINS)/urbanform"
	@echo "Linked; restart QGIS and enable 'Urban Form Mapper' in Plugins > Manage and Install Plugins."

undeploy:
	@if [ -L "$(QGIS_PLUGINS)/urbanform" ]; then rm "$(QGIS_PLUGINS)/urbanform"; fi

clean:
	rm -rf dist demo_out bench_out .test-results .pytest_cache .hypothesis
	find . -path ./$(VENV) -prune -o -name '__pycache__' -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
