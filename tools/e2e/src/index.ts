/** @luna/e2e — the end-to-end scenario's building blocks: its topologies (local and remote), the simulators' HTTP control, and clients over every protocol. */
export { ADMIN, ALL_SERVICES, TOPOLOGIES, fetchDownload, servicesOf, startTopology, type Download, type Topology, type TopologyName } from "./topologies.js";
export { connectRemote, remoteOptionsFromEnv, type RemoteOptions } from "./remote.js";
export { checkSimControl, comfyControl, vllmControl, type ComfyControl, type SimControl, type VllmControl } from "./sim-control.js";
export { allLedgerEntries, clientsFor, codeOf, eventually, streamCodeOf, transportFor, type Clients, type Protocol } from "./clients.js";
