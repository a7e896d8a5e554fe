//! Industrial-protocol command counts: what a flow asked a controller to do.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Industrial protocols the sensor recognises by port and parses for commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IcsProto {
    /// Modbus/TCP, port 502.
    Modbus,
    /// DNP3 over TCP or UDP, port 20000.
    Dnp3,
    /// Siemens S7comm over ISO-on-TCP (TPKT/COTP), port 102.
    S7comm,
    /// IEC 60870-5-104, port 2404.
    Iec104,
    /// EtherNet/IP encapsulation carrying CIP, port 44818.
    Enip,
}

impl IcsProto {
    /// Every protocol, in declaration order.
    pub const ALL: [IcsProto; 5] = [
        IcsProto::Modbus,
        IcsProto::Dnp3,
        IcsProto::S7comm,
        IcsProto::Iec104,
        IcsProto::Enip,
    ];

    /// Short lower-case name, as used in logs and JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            IcsProto::Modbus => "modbus",
            IcsProto::Dnp3 => "dnp3",
            IcsProto::S7comm => "s7comm",
            IcsProto::Iec104 => "iec104",
            IcsProto::Enip => "enip",
        }
    }
}

impl fmt::Display for IcsProto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a command does to the controlled process, from least to most dangerous.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CommandClass {
    /// Reads values or diagnostics; changes nothing.
    Read,
    /// Writes data points, registers, tags or settings.
    Write,
    /// Operates the process: select/operate, single/double commands, set points, freezes.
    Control,
    /// Stops, starts, restarts or resets a controller or its application.
    StopRestart,
    /// Changes the program or firmware: block download/upload, file transfer, firmware update.
    ProgramFirmware,
}

impl CommandClass {
    /// All classes, in order.
    pub const ALL: [CommandClass; 5] = [
        CommandClass::Read,
        CommandClass::Write,
        CommandClass::Control,
        CommandClass::StopRestart,
        CommandClass::ProgramFirmware,
    ];

    /// Short name, as used in logs, JSON and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            CommandClass::Read => "read",
            CommandClass::Write => "write",
            CommandClass::Control => "control",
            CommandClass::StopRestart => "stop-restart",
            CommandClass::ProgramFirmware => "program-firmware",
        }
    }
}

/// The set of one-byte function codes (Modbus function, DNP3 function, S7 job function,
/// IEC-104 type id, CIP service) seen in one direction of a flow.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct FunctionCodes([u64; 4]);

impl FunctionCodes {
    /// Records `code` as seen.
    #[inline]
    pub fn insert(&mut self, code: u8) {
        self.0[usize::from(code >> 6)] |= 1u64 << (code & 63);
    }

    /// Whether `code` was seen.
    #[inline]
    pub fn contains(&self, code: u8) -> bool {
        self.0[usize::from(code >> 6)] & (1u64 << (code & 63)) != 0
    }

    /// Whether no code was seen.
    pub fn is_empty(&self) -> bool {
        self.0 == [0; 4]
    }

    /// The codes seen, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u8> + '_ {
        (0u8..=255).filter(move |c| self.contains(*c))
    }

    /// Adds every code of `other`.
    pub fn union(&mut self, other: &FunctionCodes) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a |= b;
        }
    }
}

impl fmt::Debug for FunctionCodes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl Serialize for FunctionCodes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        // The length up front: compact binary formats need it.
        let n = self.0.iter().map(|w| w.count_ones() as usize).sum();
        let mut seq = s.serialize_seq(Some(n))?;
        for code in self.iter() {
            seq.serialize_element(&code)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for FunctionCodes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let codes = Vec::<u8>::deserialize(d)?;
        let mut set = FunctionCodes::default();
        for c in codes {
            set.insert(c);
        }
        Ok(set)
    }
}

/// Commands sent in one direction of a flow, by class, with the function codes seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IcsCounts {
    pub read: u32,
    pub write: u32,
    pub control: u32,
    pub stop_restart: u32,
    pub program_firmware: u32,
    /// Protocol data units that parsed but carried no command (responses, keep-alives,
    /// supervisory frames).
    pub other: u32,
    /// Protocol data units that did not parse as the protocol the port implies.
    pub malformed: u32,
    /// Function codes of the commands counted above.
    pub codes: FunctionCodes,
}

impl IcsCounts {
    /// Counts one command of `class` with function code `code`.
    #[inline]
    pub fn command(&mut self, class: CommandClass, code: u8) {
        let slot = match class {
            CommandClass::Read => &mut self.read,
            CommandClass::Write => &mut self.write,
            CommandClass::Control => &mut self.control,
            CommandClass::StopRestart => &mut self.stop_restart,
            CommandClass::ProgramFirmware => &mut self.program_firmware,
        };
        *slot = slot.saturating_add(1);
        self.codes.insert(code);
    }

    /// How many commands of `class` were counted.
    pub fn count(&self, class: CommandClass) -> u32 {
        match class {
            CommandClass::Read => self.read,
            CommandClass::Write => self.write,
            CommandClass::Control => self.control,
            CommandClass::StopRestart => self.stop_restart,
            CommandClass::ProgramFirmware => self.program_firmware,
        }
    }

    /// Total commands of every class.
    pub fn commands(&self) -> u64 {
        CommandClass::ALL
            .iter()
            .map(|c| u64::from(self.count(*c)))
            .sum()
    }
}

/// The industrial-protocol view of one flow: which protocol, and the commands each side sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IcsSummary {
    pub proto: IcsProto,
    /// Commands sent by the originator (normally the master / client / engineering station).
    pub orig: IcsCounts,
    /// Commands sent by the responder (unsolicited or reversed roles).
    pub resp: IcsCounts,
}

impl IcsSummary {
    /// An empty summary for `proto`.
    pub fn new(proto: IcsProto) -> Self {
        IcsSummary {
            proto,
            orig: IcsCounts::default(),
            resp: IcsCounts::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_codes_round_trip_through_json() {
        let mut c = FunctionCodes::default();
        for code in [0u8, 5, 63, 64, 0x29, 255] {
            c.insert(code);
        }
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(json, "[0,5,41,63,64,255]");
        let back: FunctionCodes = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
        assert!(!c.contains(6));
    }

    #[test]
    fn counts_by_class() {
        let mut c = IcsCounts::default();
        c.command(CommandClass::StopRestart, 0x29);
        c.command(CommandClass::Write, 15);
        c.command(CommandClass::Write, 16);
        assert_eq!(c.count(CommandClass::Write), 2);
        assert_eq!(c.commands(), 3);
        assert!(c.codes.contains(0x29));
    }
}
