"""``glassformer lab``: a local web lab over the library (attention, chat, classify, RAG).

Each tab is one module (``attention_tab``, ``chat_tab``, ...) with a ``TITLE`` and a
``build(context)`` that lays out its Gradio components; the work itself is done by plain functions
in the same module that call the library, so they are tested without a browser. ``app.TABS``
lists the tabs in order: a new tab is one module and one line there.

The lab is meant for one machine: it binds 127.0.0.1, loads no script, font or image from outside,
sends no analytics, and checks every input's size on the server (``limits.Limits``).
"""
