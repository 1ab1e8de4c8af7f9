"""Parses a /metrics exposition read from stdin with the Prometheus client
library's own parsers (OpenMetrics, the format served, and the classic
Prometheus text parser) and prints every sample as JSON lines:
{"family", "type", "name", "labels", "value"}. Exits non-zero if either
parser refuses the text."""

import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
from prometheus_client.parser import text_string_to_metric_families as classic

text = sys.stdin.read()
# The classic parser must read it too (a Prometheus scraping without
# OpenMetrics negotiation); its result is checked only for failing.
list(classic(text.replace("# EOF\n", "")))
for family in openmetrics(text):
    for s in family.samples:
        print(json.dumps({"family": family.name, "type": family.type, "name": s.name, "labels": s.labels, "value": s.value}))
