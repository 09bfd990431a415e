import logging

logger = logging.getLogger("eloquence.providers")
