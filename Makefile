# Urban Form Mapper: set-up, demo, tests, benchmarks, packaging.
# `make demo` and `make test` set everything up first on a fresh Debian/Ubuntu machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV      := .venv
PY        := $(VENV)/bin/python
SYS_PY    := /usr/bin/python3
APT_PKGS  := qgis python3-qgis qgis-providers python3-venv python3-pip xvfb xauth
VERSION   := $(shell sed -n 's/^version=//p' metadata.txt)
PROFILE   ?= default
QGIS_PLUGINS := $(HOME)/.local/share/QGIS/QGIS3/profiles/$(PROFILE)/python/plugins
DIST      ?= dist
REPO_URL  ?=
DEMO_RASTER  := resources/sample/kampala_ug_oam_rgb_z19_epsg3857.tif
# headless Qt for every QGIS process started from here
export QT_QPA_PLATFORM ?= offscreen

.PHONY: help setup system-packages demo test test-engine test-plugin bench eval package deploy undeploy clean distclean

help:
	@echo "make demo      set up if needed, then cluster the bundled Kampala sample into demo_out/"
	@echo "make test      set up if needed, then run every test (engine and real-QGIS plugin tests)"
	@echo "make setup     install QGIS (Debian, as root) and the engine venv (.venv)"
	@echo "make bench     throughput, malloc tuning and memory benchmarks (minutes)"
	@echo "make eval      clustering quality on real Kampala imagery and the synthetic city"
	@echo "make package   plugin zip and plugins.xml in $(DIST)/ (Install from ZIP, or a plugin repository at REPO_URL)"
	@echo "make deploy    link this tree into the QGIS profile '$(PROFILE)' for development"
	@echo "make clean     remove build and demo outputs (distclean also removes .venv)"

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

$(VENV)/.setup-done: requirements.txt | system-packages
	@test -x $(PY) || $(SYS_PY) -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	@$(PY) -c "import qgis.core, torch, rasterio, geopandas, sklearn" \
		|| { echo "The engine venv cannot import its packages; see the messages above."; exit 1; }
	@touch $@

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

test: setup test-engine test-plugin

test-engine: setup
	$(PY) -m pytest tests/engine -p no:qgis -q -ra --junitxml=.test-results/engine.xml

test-plugin: setup
	$(PY) -m pytest tests/plugin -q -ra --junitxml=.test-results/plugin.xml

eval: setup
	$(PY) tests/bench/eval.py --out bench_out
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
	if [ $$rc -ne 0 ]; then echo "make bench: a benchmark missed its target (see above)"; fi; exit $$rc

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
