"""Never finishes importing (a module that connects to a server at import time, say)."""

import logging
import threading

logging.getLogger("corral.tests").info("blocks: importing forever")
threading.Event().wait()
