"""Layer 1: the EMT classification datasets -- their table (:mod:`.emt`) and loaders (:mod:`.loading`, :mod:`.offline`)."""
