"""The certificate store and the files beside it: lego-layout pairs (lego), the swap journal,
the parse index, durable file primitives (fsutil), the single-writer lock, status files and the
runtime-announced servers."""
