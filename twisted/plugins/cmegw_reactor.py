from twisted.application.reactors import Reactor

cmegw = Reactor(
    "cmegw",
    "cmegw.reactor",
    "epoll with a lean dispatch for cmegw's byte path (Linux).",
)
