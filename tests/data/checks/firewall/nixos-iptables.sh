# The chains NixOS's iptables firewall (networking.firewall, backend iptables) creates,
# condensed from nixos/modules/services/networking/firewall-iptables.nix (allowedTCPPorts 22).
set -e
ip46() { iptables -w "$@"; }
ip46 -N nixos-fw-accept
ip46 -A nixos-fw-accept -j ACCEPT
ip46 -N nixos-fw-refuse
ip46 -A nixos-fw-refuse -j DROP
ip46 -N nixos-fw-log-refuse
ip46 -A nixos-fw-log-refuse -p tcp --syn -j LOG --log-level info --log-prefix "refused connection: "
ip46 -A nixos-fw-log-refuse -m pkttype ! --pkt-type unicast -j nixos-fw-refuse
ip46 -A nixos-fw-log-refuse -j nixos-fw-refuse
ip46 -N nixos-fw
ip46 -A nixos-fw -i lo -j nixos-fw-accept
ip46 -A nixos-fw -m conntrack --ctstate ESTABLISHED,RELATED -j nixos-fw-accept
ip46 -A nixos-fw -p tcp --dport 22 -j nixos-fw-accept
ip46 -A nixos-fw -p icmp --icmp-type echo-request -j nixos-fw-accept
ip46 -A nixos-fw -j nixos-fw-log-refuse
ip46 -A INPUT -j nixos-fw
