from twisted.application.service import ServiceMaker

pandapush = ServiceMaker(
    "pandapush", "pandapush.tap", "A multi-tenant Bayeux publish/subscribe server.", "pandapush"
)
