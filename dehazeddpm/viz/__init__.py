"""Pictures: static matplotlib figures and the ipywidgets UIs of the notebooks.

Layer: viz. May import ``models`` (output types), ``io`` and the foundation (and ``inference`` and ``hub`` for the notebooks' helpers);
nothing below imports it. Only API common to ipywidgets 7.7 (Colab) and 8 is used.
"""
from . import plotting, widgets
from .session import NotebookSession, notebook_session, remove_stale_scratch

__all__ = ["NotebookSession", "notebook_session", "plotting", "remove_stale_scratch", "widgets"]
