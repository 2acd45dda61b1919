"""``urbanform:setupengine``: build the engine environment in this QGIS profile, headless.

The same installer as the panel's "Set up engine" (plugin/runner/engine_setup.py):
``qgis_process run urbanform:setupengine`` prepares a server or a classroom of
machines. An engine already built from this plugin's lock is kept unless
FORCE is set. Installer output goes to the Processing log; Cancel stops it and
leaves the engine in use unchanged.
"""
from __future__ import annotations

from pathlib import Path

from qgis.core import (QgsProcessingException, QgsProcessingOutputBoolean, QgsProcessingOutputString,
                       QgsProcessingParameterBoolean, QgsProcessingParameterEnum, QgsProcessingParameterFile,
                       QgsProcessingParameterString)

from ..runner import engine_env, engine_setup
from .base import UrbanFormAlgorithm

PYTHON, INDEX_URL, WHEEL_DIR, TORCH, FORCE = "PYTHON", "INDEX_URL", "WHEEL_DIR", "TORCH", "FORCE"
ENGINE_PYTHON, CURRENT = "ENGINE_PYTHON", "CURRENT"
TORCH_BUILDS = ("auto", "cpu", "cuda")


class SetupEngineAlgorithm(UrbanFormAlgorithm):
    NAME = "setupengine"
    DISPLAY_NAME = "Set up engine"
    HELP_TEXT = "\n".join((
        "Builds the engine (a Python environment with PyTorch and the geospatial libraries, a few GB) in this "
        "QGIS profile from the lock file shipped with the plugin, with uv when it can be had and pip otherwise. "
        "The new environment replaces the one in use only after its check passed, so a failed or cancelled "
        "set-up never breaks a working engine.",
        "• Base Python: the interpreter to build from (default: the Python QGIS runs on).",
        "• Package index URL: a mirror or proxy of PyPI (default PyPI).",
        "• Wheel folder: a local folder of wheels for offline sites (made elsewhere with "
        "`pip download --require-hashes -r requirements.lock -d wheels`).",
        "• PyTorch build: auto picks CUDA when nvidia-smi reports a driver.",
        "• Rebuild (even when the engine is current): build again, e.g. after a failed GPU driver update.",
        "Outputs: Engine Python (the interpreter the other algorithms use) and Built from this plugin's lock.",
    ))

    def initAlgorithm(self, config=None) -> None:  # noqa: N802 - QGIS API
        self.addParameter(QgsProcessingParameterFile(PYTHON, "Base Python (default: QGIS's)", optional=True))
        self.addParameter(QgsProcessingParameterString(INDEX_URL, "Package index URL (default PyPI)",
                                                       defaultValue="", optional=True))
        self.addParameter(QgsProcessingParameterFile(WHEEL_DIR, "Wheel folder (offline sites)",
                                                     behavior=QgsProcessingParameterFile.Folder, optional=True))
        self.addParameter(QgsProcessingParameterEnum(TORCH, "PyTorch build", options=list(TORCH_BUILDS),
                                                     defaultValue=0))
        self.addParameter(QgsProcessingParameterBoolean(FORCE, "Rebuild (even when the engine is current)",
                                                        defaultValue=False))
        self.addOutput(QgsProcessingOutputString(ENGINE_PYTHON, "Engine Python"))
        self.addOutput(QgsProcessingOutputBoolean(CURRENT, "Built from this plugin's lock"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 - QGIS API
        wheel_dir = self.parameterAsFile(parameters, WHEEL_DIR, context)
        opts = engine_env.setup_options(
            python=self.parameterAsFile(parameters, PYTHON, context) or None,
            index_url=(self.parameterAsString(parameters, INDEX_URL, context) or "").strip(),
            wheel_dirs=[Path(wheel_dir)] if wheel_dir else [],
            torch_build=TORCH_BUILDS[self.parameterAsEnum(parameters, TORCH, context)])
        status = engine_setup.status(opts.home)
        if status["installed"] and status["current"] and not self.parameterAsBool(parameters, FORCE, context):
            feedback.pushInfo(f"The engine is set up and current: {status['python']}")
            return {ENGINE_PYTHON: status["python"], CURRENT: True}

        def step(i: int, n: int, name: str) -> None:
            feedback.setProgress(100.0 * i / n)
            feedback.setProgressText(f"{i + 1}/{n} {name}")

        try:
            record = engine_setup.install(opts, log=feedback.pushConsoleInfo, step=step,
                                          is_cancelled=feedback.isCanceled)
        except engine_setup.SetupError as exc:
            if exc.code == "cancelled":
                feedback.pushInfo(str(exc))
                return {ENGINE_PYTHON: status["python"] or "", CURRENT: bool(status["current"])}
            raise QgsProcessingException(str(exc)) from None
        feedback.setProgress(100)
        feedback.pushInfo(f"Engine ready: {record['python']} (torch {record['torch']}, {record['torch_build']} "
                          f"build, {record['installer']}, {record['seconds']} s)")
        return {ENGINE_PYTHON: record["python"], CURRENT: True}
