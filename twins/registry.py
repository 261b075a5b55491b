"""The twin-model registry: name -> model class, extended by ``twinloop.twin_models``."""

from __future__ import annotations

from twinloop.errors import TwinError
from twinloop.registry import Registry
from twinloop.twins.model import DegradationModel

models: Registry[type[DegradationModel]] = Registry(
    "twin model", "twinloop.twin_models",
    {"power_module_thermal": "twinloop.twins.models.power_module:PowerModuleThermal",
     "pump_bearing": "twinloop.twins.models.pump_bearing:PumpBearingWear",
     "paris_crack_growth": "twinloop.twins.models.crack_growth:ParisCrackGrowth",
     "solder_joint_fatigue": "twinloop.twins.models.solder_fatigue:SolderJointFatigue",
     "electrolytic_capacitor": "twinloop.twins.models.capacitor:ElectrolyticCapacitorAgeing",
     "electromigration": "twinloop.twins.models.electromigration:Electromigration",
     "battery_circuit": "twinloop.twins.models.battery:BatteryCircuit",
     "li_ion_capacity_fade": "twinloop.twins.models.li_ion_fade:LiIonCapacityFade"},
    error=TwinError,
)
