"""A small stand-in for the parts of the 3D Slicer application the module's Widget uses, so that the
real ``MultiModalSeg.py`` runs under pytest: ``qt`` (PythonQt's API over PySide6: Qt properties as
attributes, ``connect("signal(args)", slot)``), the CTK / qMRML widgets of the ``.ui`` file (small
PySide6 classes over slicer-core's real MRML scene), ``slicer.util`` dialogs and UI loading, and
``slicer.ScriptedLoadableModule``. It is not Slicer: it checks the Widget's logic, not its looks.

``block_imports(names)`` makes packages unimportable (a stock Slicer's Python has no torch, monai,
jsonschema or nibabel): ``import`` raises ``ModuleNotFoundError`` and ``find_spec`` says missing.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import sys
import types
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6 import QtCore, QtGui, QtUiTools, QtWidgets  # noqa: E402

STOCK_SLICER_LACKS = ("torch", "monai", "jsonschema", "nibabel", "einops", "matplotlib")


# --------------------------------------------------------------------------- import blocker


class ImportBlocker(importlib.abc.MetaPathFinder):
    """``import name`` (and its submodules) fails as if the package were not installed."""

    def __init__(self, names) -> None:
        self.names = set(names)

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named '{fullname}' (blocked: a stock Slicer lacks it)", name=fullname)
        return None


def block_imports(names=STOCK_SLICER_LACKS) -> ImportBlocker:
    for name in list(sys.modules):
        if name.split(".")[0] in names:
            raise RuntimeError(f"{name} is imported already; block imports in a fresh interpreter")
    blocker = ImportBlocker(names)
    sys.meta_path.insert(0, blocker)
    return blocker


def unblock_imports(blocker: ImportBlocker) -> None:
    sys.meta_path.remove(blocker)
    importlib.invalidate_caches()


# --------------------------------------------------------------------------- PythonQt-style proxies


def unwrap(value):
    return value._obj if isinstance(value, PQ) else value


def wrap(value):
    if isinstance(value, QtCore.QObject) and not isinstance(value, PQ):
        return PQ(value)
    return value


class PQ:
    """A QObject seen through PythonQt's eyes: Qt properties read and written as attributes
    (``label.text = "x"``, ``combo.currentData``), other attributes are the object's methods."""

    __slots__ = ("_obj",)

    def __init__(self, obj) -> None:
        object.__setattr__(self, "_obj", obj)

    def _is_property(self, name: str) -> bool:
        meta = self._obj.metaObject()
        return meta.indexOfProperty(name) >= 0 or name.encode() in [bytes(n) for n in self._obj.dynamicPropertyNames()]

    def __getattr__(self, name):
        obj = self._obj
        if self._is_property(name):
            return wrap(obj.property(name))
        attr = getattr(obj, name)
        if callable(attr) and not isinstance(attr, QtCore.SignalInstance):
            def call(*args, **kwargs):
                return wrap(attr(*[unwrap(a) for a in args], **{k: unwrap(v) for k, v in kwargs.items()}))
            return call
        return attr

    def __setattr__(self, name, value):
        if self._is_property(name):
            if not self._obj.setProperty(name, unwrap(value)):
                raise AttributeError(f"{self._obj.metaObject().className()}.{name} could not be set to {value!r}")
            return
        setattr(self._obj, name, value)

    def __eq__(self, other):
        return unwrap(other) is self._obj

    def __hash__(self):
        return id(self._obj)

    def __bool__(self):
        return True

    def connect(self, signature: str, slot):
        getattr(self._obj, signature.split("(")[0]).connect(slot)


def factory(cls):
    """``qt.QComboBox()`` etc.: a new Qt object behind a PythonQt-style proxy."""
    def make(*args, **kwargs):
        return wrap(cls(*[unwrap(a) for a in args], **kwargs))
    make.__name__ = cls.__name__
    for name in dir(cls):  # enums and static members: qt.QComboBox.AdjustToContents, qt.QFileDialog.getOpenFileName
        if name[:1].isupper():
            with contextlib.suppress(Exception):
                setattr(make, name, getattr(cls, name))
    return make


# --------------------------------------------------------------------------- CTK / qMRML widgets


class PySignal:
    """A signal kept in Python: PySide6's ``Signal(object)`` loses a reference to ``None`` on every
    emit under Python 3.11, and a node selector emits ``None`` often."""

    def __init__(self) -> None:
        self.slots = []

    def connect(self, slot) -> None:
        self.slots.append(slot)

    def emit(self, *args) -> None:
        for slot in list(self.slots):
            slot(*args)


class qMRMLWidget(QtWidgets.QWidget):
    def setMRMLScene(self, scene) -> None:
        self.scene = scene


class ctkCollapsibleButton(QtWidgets.QGroupBox):
    """A titled group that can fold (what matters to the Widget: ``text``, ``collapsed``)."""

    contentsCollapsed = QtCore.Signal(bool)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._collapsed = False

    def _get_text(self) -> str:
        return self.title()

    def _set_text(self, text: str) -> None:
        self.setTitle(text)

    def _get_collapsed(self) -> bool:
        return self._collapsed

    def _set_collapsed(self, collapsed: bool) -> None:
        if collapsed == self._collapsed:
            return
        self._collapsed = bool(collapsed)
        for child in self.findChildren(QtWidgets.QWidget, options=QtCore.Qt.FindDirectChildrenOnly):
            child.setVisible(not self._collapsed)
        self.setMaximumHeight(22 if self._collapsed else 16777215)
        self.contentsCollapsed.emit(self._collapsed)

    text = QtCore.Property(str, _get_text, _set_text)
    collapsed = QtCore.Property(bool, _get_collapsed, _set_collapsed)


class qMRMLNodeComboBox(QtWidgets.QComboBox):
    """The nodes of ``nodeTypes`` in the scene, by name; the current one is ``currentNode()``."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.currentNodeChanged = PySignal()
        self.scene = None
        self._types: list[str] = []
        self._flags = {"noneEnabled": False, "addEnabled": False, "removeEnabled": False, "renameEnabled": False,
                       "showChildNodeTypes": True}
        self._none = "None"
        self._observers: list[int] = []
        self.currentIndexChanged.connect(lambda _: self.currentNodeChanged.emit(self.currentNode()))

    def _get_types(self):
        return self._types

    def _set_types(self, types) -> None:
        self._types = list(types)
        self._refresh()

    def _flag(name):  # noqa: N805  (a property factory used in the class body)
        return QtCore.Property(bool, lambda self: self._flags[name], lambda self, v: self._set_flag(name, v))

    def _set_flag(self, name, value) -> None:
        self._flags[name] = bool(value)
        self._refresh()

    nodeTypes = QtCore.Property("QStringList", _get_types, _set_types)
    noneEnabled = _flag("noneEnabled")
    addEnabled = _flag("addEnabled")
    removeEnabled = _flag("removeEnabled")
    renameEnabled = _flag("renameEnabled")
    showChildNodeTypes = _flag("showChildNodeTypes")
    noneDisplay = QtCore.Property(str, lambda self: self._none, lambda self, v: setattr(self, "_none", v))

    def setMRMLScene(self, scene) -> None:
        if self.scene is not None:
            for tag in self._observers:
                self.scene.RemoveObserver(tag)
        self.scene = scene
        self._observers = [scene.AddObserver(event, lambda *_: self._refresh())
                           for event in (scene.NodeAddedEvent, scene.NodeRemovedEvent)]
        self._refresh()

    def _accepts(self, node) -> bool:
        if self._flags["showChildNodeTypes"]:
            return any(node.IsA(t) for t in self._types)
        return node.GetClassName() in self._types

    def _refresh(self) -> None:
        if self.scene is None:
            return
        current = self.currentNode()
        nodes = [self.scene.GetNthNode(i) for i in range(self.scene.GetNumberOfNodes())]
        nodes = [n for n in nodes if self._accepts(n) and not n.GetHideFromEditors()]
        self.blockSignals(True)
        self.clear()
        if self._flags["noneEnabled"]:
            self.addItem(self._none, "")
        for node in nodes:
            self.addItem(node.GetName(), node.GetID())
        index = self.findData(current.GetID()) if current is not None else -1
        if index < 0 and not self._flags["noneEnabled"] and nodes:
            index = self.findData(nodes[0].GetID())
        self.setCurrentIndex(max(0, index))
        self.blockSignals(False)
        if self.currentNode() is not current:
            self.currentNodeChanged.emit(self.currentNode())

    def currentNode(self):
        node_id = self.currentData()
        return self.scene.GetNodeByID(node_id) if self.scene is not None and node_id else None

    def currentNodeID(self) -> str:
        return self.currentData() or ""

    def setCurrentNode(self, node) -> None:
        self._refresh()
        index = self.findData(node.GetID()) if node is not None else (0 if self._flags["noneEnabled"] else -1)
        if index >= 0:
            self.setCurrentIndex(index)


class _PlotController:
    def setVisible(self, visible: bool) -> None:
        self.visible = visible


class qMRMLPlotWidget(QtWidgets.QFrame):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setFrameShape(QtWidgets.QFrame.StyledPanel)
        self._view = None
        self._controller = _PlotController()

    def setMRMLScene(self, scene) -> None:
        self.scene = scene

    def plotController(self):
        return self._controller

    def setMRMLPlotViewNode(self, node) -> None:
        self._view = node

    def mrmlPlotViewNode(self):
        return self._view


CUSTOM_WIDGETS = (qMRMLWidget, ctkCollapsibleButton, qMRMLNodeComboBox, qMRMLPlotWidget)


# --------------------------------------------------------------------------- qt, slicer.util, ScriptedLoadableModule


class Recorder:
    """What the Widget showed the user: dialogs, with the answer a confirmation gets."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.confirmations: list[str] = []
        self.infos: list[str] = []
        self.confirm_answer = True
        self.selected_module = None


def make_qt_module() -> types.ModuleType:
    qt = types.ModuleType("qt")
    for module in (QtCore, QtGui, QtWidgets):
        for name in dir(module):
            obj = getattr(module, name)
            if name.startswith("Q") and isinstance(obj, type) and not hasattr(qt, name):
                is_qobject = issubclass(obj, QtCore.QObject)
                setattr(qt, name, factory(obj) if is_qobject else obj)
    qt.Qt = QtCore.Qt
    qt.QUiLoader = QtUiTools.QUiLoader
    return qt


def load_ui(path: str):
    loader = QtUiTools.QUiLoader()
    for cls in CUSTOM_WIDGETS:
        loader.registerCustomWidget(cls)
    file = QtCore.QFile(str(path))
    if not file.open(QtCore.QIODevice.ReadOnly):
        raise RuntimeError(f"Could not load UI file: file not found {path}")
    widget = loader.load(file)
    file.close()
    if widget is None:
        raise RuntimeError(f"Could not load UI file: {path} ({loader.errorString()})")
    return wrap(widget)


def child_widget_variables(widget):
    ui = types.SimpleNamespace()
    for child in unwrap(widget).findChildren(QtCore.QObject):
        if child.objectName():
            setattr(ui, child.objectName(), wrap(child))
    return ui


def install(scene) -> Recorder:
    """Make ``import qt`` and the Slicer application parts the Widget uses work over ``scene``
    (``conftest.Scene``: a slicer-core scene with its logics). Returns the dialog recorder."""
    import slicer
    import slicer.util

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    app.setStyle("Fusion")
    recorder = Recorder()
    sys.modules["qt"] = make_qt_module()

    util = slicer.util
    util.loadUI = load_ui
    util.childWidgetVariables = child_widget_variables
    util.errorDisplay = lambda text, *a, **k: recorder.errors.append(str(text))
    util.infoDisplay = lambda text, *a, **k: recorder.infos.append(str(text))
    util.warningDisplay = lambda text, *a, **k: recorder.infos.append(str(text))

    def confirm(text, *a, **k):
        recorder.confirmations.append(str(text))
        return recorder.confirm_answer

    util.confirmOkCancelDisplay = confirm
    util.confirmYesNoDisplay = confirm
    util.selectModule = lambda name: setattr(recorder, "selected_module", name)

    @contextlib.contextmanager
    def wait_cursor():
        yield

    util.WaitCursor = wait_cursor
    slicer.mrmlScene = scene.scene
    slicer.modules = types.SimpleNamespace(segmentations=types.SimpleNamespace(logic=lambda: scene.segmentations))

    sys.modules["slicer.ScriptedLoadableModule"] = make_scripted_loadable_module()
    slicer.ScriptedLoadableModule = sys.modules["slicer.ScriptedLoadableModule"]
    return recorder


def make_scripted_loadable_module() -> types.ModuleType:
    import unittest

    module = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModule:
        def __init__(self, parent) -> None:
            self.parent = parent

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent=None) -> None:
            if parent is None:
                parent = wrap(QtWidgets.QWidget())
                parent.setLayout(QtWidgets.QVBoxLayout())
            self.parent = parent
            self.layout = wrap(unwrap(parent).layout())
            self.moduleName = type(self).__name__[: -len("Widget")]

        def setup(self) -> None:
            pass

        def resourcePath(self, filename: str) -> str:
            return str(Path(sys.modules[type(self).__module__].__file__).parent / "Resources" / filename)

        def cleanup(self) -> None:
            pass

    class ScriptedLoadableModuleTest(unittest.TestCase):
        def delayDisplay(self, message, msec=0) -> None:
            print(message)

    module.ScriptedLoadableModule = ScriptedLoadableModule
    module.ScriptedLoadableModuleWidget = ScriptedLoadableModuleWidget
    module.ScriptedLoadableModuleTest = ScriptedLoadableModuleTest
    return module


def import_module_file(path: Path, name: str = "MultiModalSeg"):
    """Import the real ``MultiModalSeg.py`` (as Slicer's scripted-module factory does, by path)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def process_events(seconds: float = 0.0) -> None:
    app = QtWidgets.QApplication.instance()
    deadline = QtCore.QDeadlineTimer(int(seconds * 1000))
    while True:
        app.processEvents()
        if deadline.hasExpired():
            return
