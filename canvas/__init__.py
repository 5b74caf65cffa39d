"""Pure-Python canvas: describe work as immutable expressions and compile it to a DAG.

Nothing here imports Django, a database or a network client; running an expression
is delegated to an executor installed through :mod:`canvas.executor`. A compiled
graph's nodes are :class:`GraphNode` values (``Node`` is their former name, kept as an
alias; the stored rows are ``django_cloudtasks.models.Node``).
"""

from __future__ import annotations

from canvas.compiler import compile
from canvas.composition import chain, chord, group, pipe
from canvas.errors import CanvasError, GraphFormatError, NoEngineError, NoExecutorError
from canvas.expression import Expression
from canvas.graph import GRAPH_VERSION, Graph, GraphNode, InputRule, Node
from canvas.mapping import chunks, xmap, xstarmap
from canvas.options import OPTION_NAMES
from canvas.signature import Signature, signature

__all__ = [
    "GRAPH_VERSION",
    "OPTION_NAMES",
    "CanvasError",
    "Expression",
    "Graph",
    "GraphFormatError",
    "GraphNode",
    "InputRule",
    "NoEngineError",
    "NoExecutorError",
    "Node",  # the former name of GraphNode
    "Signature",
    "chain",
    "chord",
    "chunks",
    "compile",
    "group",
    "pipe",
    "signature",
    "xmap",
    "xstarmap",
]
