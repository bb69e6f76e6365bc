from twisted.application.service import ServiceMaker

cmegw = ServiceMaker(
    "cmegw",
    "cmegw.tap",
    "Software M-Bus gateway: transparent TCP tunnels to M-Bus serial lines.",
    "cmegw",
)
