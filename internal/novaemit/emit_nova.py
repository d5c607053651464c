#!/usr/bin/python3
"""Send Nova versioned notifications the way Nova sends them.

Sets up oslo.messaging as nova/rpc.py does for
  [oslo_messaging_notifications] driver = messagingv2 (or messaging)
  [notifications] notification_format = versioned
  [notifications] versioned_notifications_topics = versioned_notifications
with control_exchange 'nova' and Nova's RequestContextSerializer, then sends
one notification per line of stdin, all from one Notifier (one process, as
one nova service sends them). Each line is a JSON object:
  {"sample": "<resolved sample file>", "publisher_id": "nova-compute:host2",
   "uuid": "<instance uuid>", "host": "<payload.host>"}
where every key but "sample" is optional and overrides the sample.

Usage: emit_nova.py TRANSPORT_URL DRIVER < plan.jsonl
(internal/novaemit embeds this script and runs it with python3 -c.)
Prints "sent N" at the end.
"""
import json
import sys

from oslo_config import cfg
from oslo_context import context as o_context
import oslo_messaging as messaging

url, driver = sys.argv[1], sys.argv[2]
conf = cfg.ConfigOpts()
conf([], project='nova')  # no config files read
messaging.set_transport_defaults(control_exchange='nova')
transport = messaging.get_notification_transport(conf, url=url)
conf.set_override('driver', [driver], group='oslo_messaging_notifications')


class RequestContextSerializer(messaging.Serializer):
    """Same behaviour as nova.rpc.RequestContextSerializer."""

    def __init__(self, base):
        self._base = base

    def serialize_entity(self, ctxt, entity):
        return self._base.serialize_entity(ctxt, entity)

    def deserialize_entity(self, ctxt, entity):
        return self._base.deserialize_entity(ctxt, entity)

    def serialize_context(self, ctxt):
        return ctxt.to_dict()

    def deserialize_context(self, ctxt):
        return o_context.RequestContext.from_dict(ctxt)


notifier = messaging.Notifier(transport, serializer=RequestContextSerializer(messaging.JsonPayloadSerializer()),
                              topics=['versioned_notifications'])
ctxt = o_context.RequestContext(user_id='fake', project_id='6f70656e737461636b20342065766572',
                                request_id='req-5b6c791d-5709-4f36-8fbe-c3e02869e35d',
                                roles=['admin'], is_admin=True)
samples = {}
sent = 0
for line in sys.stdin:
    if not line.strip():
        continue
    plan = json.loads(line)
    if plan['sample'] not in samples:
        with open(plan['sample']) as f:
            samples[plan['sample']] = json.load(f)
    sample = json.loads(json.dumps(samples[plan['sample']]))  # deep copy
    data = sample['payload']['nova_object.data']
    if 'uuid' in plan:
        data['uuid'] = plan['uuid']
    if 'host' in plan:
        data['host'] = plan['host']
    pub = notifier.prepare(publisher_id=plan.get('publisher_id', sample['publisher_id']))
    getattr(pub, sample['priority'].lower())(ctxt, sample['event_type'], sample['payload'])
    sent += 1
transport.cleanup()
print('sent', sent)
