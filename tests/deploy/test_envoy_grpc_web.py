#!/usr/bin/python3
"""deploy/envoy/grpc-web.yaml, checked structurally (no Envoy binary on these machines): the
grpc_web, cors and router filters in that order, the route to the xlstmd cluster with no
timeout, HTTP/2 to the upstream, and no wildcard CORS origin."""

import os
import sys
import unittest

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class EnvoyGrpcWebTest(unittest.TestCase):

    def setUp(self):
        with open(os.path.join(ROOT, "deploy", "envoy", "grpc-web.yaml")) as f:
            self.cfg = yaml.safe_load(f)
        listener = self.cfg["static_resources"]["listeners"][0]
        self.hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]

    def test_filters_in_order(self):
        names = [f["name"] for f in self.hcm["http_filters"]]
        self.assertEqual(names, ["envoy.filters.http.grpc_web", "envoy.filters.http.cors",
                                 "envoy.filters.http.router"])

    def test_route_has_no_timeout_and_reaches_xlstmd(self):
        vhost = self.hcm["route_config"]["virtual_hosts"][0]
        route = vhost["routes"][0]
        self.assertEqual(route["match"]["prefix"], "/xlstmd.v1.")
        self.assertEqual(route["route"]["cluster"], "xlstmd")
        self.assertEqual(route["route"]["timeout"], "0s")
        self.assertEqual(self.hcm["stream_idle_timeout"], "0s")
        cors = vhost["typed_per_filter_config"]["envoy.filters.http.cors"]
        origins = [o.get("exact", o.get("prefix", "")) for o in cors["allow_origin_string_match"]]
        self.assertNotIn("*", origins)
        self.assertIn("grpc-status", cors["expose_headers"])

    def test_upstream_speaks_http2(self):
        cluster = self.cfg["static_resources"]["clusters"][0]
        self.assertEqual(cluster["name"], "xlstmd")
        opts = cluster["typed_extension_protocol_options"][
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
        self.assertIn("http2_protocol_options", opts["explicit_http_config"])
        port = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"][
            "address"]["socket_address"]["port_value"]
        self.assertEqual(port, 50051)


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
