/** @luna/e2e — the end-to-end scenario's building blocks: both local topologies and clients over every protocol. */
export { ADMIN, TOPOLOGIES, servicesOf, startTopology, type Topology, type TopologyName } from "./topologies.js";
export { allLedgerEntries, clientsFor, codeOf, eventually, streamCodeOf, transportFor, type Clients, type Protocol } from "./clients.js";
