"""``musiclime serve``: a read-only local web application over an output.

:mod:`.index` builds a compact index of every (run, track) row in a local cache folder keyed
by the tables' versions and answers searches from memory; :mod:`.pages` renders the pages
from the index and the few data files a track's rows live in; :mod:`.app` is the ASGI
application with its safety rules (loopback, token, Host check, CSP, read-only).
"""
